"""One registry: every model family declares itself in its own package, and a new family is one
package plus one line in ``inrv.encoded.FAMILIES`` (no torch needed to read the declarations)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import inrv
from inrv.codec.base import get_model
from inrv.codec.config import PRESETS, config_from_dict, config_from_payload, config_to_dict, family_spec
from inrv.encoded import FAMILIES, Encoded
from inrv.errors import InputError, UsageError


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_declares_config_presets_and_model(name):
    spec = family_spec(name)
    assert spec.name == name
    assert dataclasses.is_dataclass(spec.config) and spec.config().model == name
    assert spec.presets and all(isinstance(c, spec.config) for c in spec.presets.values())
    assert all(PRESETS[k] is c for k, c in spec.presets.items())
    cfg = next(iter(spec.presets.values()))
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert spec.model.split(":")[0].startswith(FAMILIES[name] + ".")


def test_presets_and_configs_load_without_torch():
    code = ("import sys; from inrv.codec.config import PRESETS, make_config; import inrv.codec.latent, "
            "inrv.codec.paper; make_config('tiny', ds='1/4'); assert 'torch' not in sys.modules, 'torch'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_latent_upgrade_fills_what_old_payloads_meant():
    new = config_to_dict(PRESETS["latent-tiny"])
    old = {k: v for k, v in new.items() if k not in ("ctx_passes", "upsample", "ctx_layers")}
    cfg = config_from_payload(old)
    assert (cfg.ctx_passes, cfg.upsample, cfg.ctx_layers) == (2, "linear", 1)
    assert config_from_payload(new) == config_from_dict(new) == PRESETS["latent-tiny"]


def test_unknown_family_is_one_clear_error():
    with pytest.raises(InputError, match="unknown model family 'nope'"):
        get_model("nope")
    with pytest.raises(UsageError, match="unknown model family 'nope'"):
        config_from_dict({"model": "nope"})
    assert family_spec("nope") is None and family_spec(None) is None


FAKE_CONFIG = '''
from dataclasses import dataclass
from inrv.codec.family import FamilySpec

@dataclass(frozen=True)
class RawConfig:
    model: str = "raw"
    scale: float = 1.0

FAMILY = FamilySpec(name="raw", config=RawConfig, presets={"raw": RawConfig()}, model="fakefam.model:RawModel")
'''
FAKE_MODEL = '''
import numpy as np
from inrv.encoded import Encoded

class RawModel:
    name = "raw"

    def fit(self, data, config, *, device=None, progress=None):
        a = np.ascontiguousarray(data, dtype="<f4")
        return Encoded("raw", {"model": "raw", "scale": config.scale}, {"v": a.tobytes()}, a.shape,
                       (float(a.min()), float(a.max())))

    def render(self, encoded, *, shape=None, device=None):
        return np.frombuffer(encoded.sections["v"], "<f4").reshape(encoded.shape).copy()
'''


def test_a_new_family_is_one_package_and_one_registry_line(tmp_path, monkeypatch):
    pkg = tmp_path / "fakefam"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "config.py").write_text(textwrap.dedent(FAKE_CONFIG))
    (pkg / "model.py").write_text(textwrap.dedent(FAKE_MODEL))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(FAMILIES, "raw", "fakefam")          # the one line

    x = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    spec = family_spec("raw")
    enc = inrv.encode(x, spec.presets["raw"])
    assert enc.model == "raw" and "raw" in inrv.list_models()
    vol = inrv.Volume(x)
    from inrv.formats.inrvfile import read_inrv, write_inrv     # the container accepts the new id

    write_inrv(tmp_path / "x.inrv", enc, vol)
    back = read_inrv(tmp_path / "x.inrv")
    assert config_from_payload(back.encoded.config) == spec.config()
    np.testing.assert_array_equal(inrv.decode(back.encoded), x.astype(np.float32))
    assert isinstance(back.encoded, Encoded)
