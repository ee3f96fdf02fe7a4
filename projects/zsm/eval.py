"""`python -m projects.zsm.eval` — see projects/zsm/README.md."""

from shared.run import main

if __name__ == "__main__":
    main("zsm", "eval")
