"""The `brainrl` command line (see ``brainrl.cli.main``)."""
