"""`python -m projects.zsm.infer` — see projects/zsm/README.md."""

from shared.run import main

if __name__ == "__main__":
    main("zsm", "infer")
