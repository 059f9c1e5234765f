"""inrv.cli: the ``inrv`` command line, a thin click layer over the public Python API."""
