"""`python -m headwater.ops`: the same as the `headwater` command."""

from .cli import main

# The guard matters: consumer worker processes are started with `spawn`, which imports the main
# module again under another name.
if __name__ == "__main__":
    main()
