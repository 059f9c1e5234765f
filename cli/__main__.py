"""``python -m inrv.cli ...``: the ``inrv`` command without its entry point (same as ``python -m inrv``)."""

from .main import main

if __name__ == "__main__":
    main(prog_name="inrv")
