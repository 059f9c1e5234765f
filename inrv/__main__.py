"""``python -m inrv ...``: the ``inrv`` command without its entry point (e.g. ``python -m inrv batch SRC -o DST``)."""

from .cli.main import main

if __name__ == "__main__":
    main(prog_name="inrv")
