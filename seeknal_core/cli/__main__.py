"""`python -m seeknal_core.cli`."""

from . import main

main()
