"""`python -m projects.facealign.eval` — see projects/facealign/README.md."""

from shared.run import main

if __name__ == "__main__":
    main("facealign", "eval")
