"""``python maoctl.py ...``: the prototype's way to start maoctl (the console script is ``maoctl``)."""

from ctl.cli import main

if __name__ == "__main__":
    main()
