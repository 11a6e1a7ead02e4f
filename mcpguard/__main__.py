import sys

from mcpguard.cli import main

sys.exit(main())
