"""`python -m headwater.ops`: the same as the `headwater` command."""

from .cli import main

main()
