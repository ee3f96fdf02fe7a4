"""`python -m projects.faceset.eval` — see projects/faceset/README.md."""

from shared.run import main

if __name__ == "__main__":
    main("faceset", "eval")
