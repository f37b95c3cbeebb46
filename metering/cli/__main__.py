"""`python -m metering.cli`: the console script without its installed wrapper."""

from metering.cli import main

main()
