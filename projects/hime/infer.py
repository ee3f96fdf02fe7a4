"""`python -m projects.hime.infer` — see projects/hime/README.md."""

from shared.run import main

if __name__ == "__main__":
    main("hime", "infer")
