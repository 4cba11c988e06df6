"""``python -m client.cli``: the ``qwen-client`` command."""

import sys

from client.cli.main import main

sys.exit(main())
