"""`python -m edgert` = the `edgert` command."""
from edgert.cli import main

if __name__ == "__main__":
    main()
