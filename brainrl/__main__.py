import sys

from brainrl.cli.main import main

sys.exit(main())
