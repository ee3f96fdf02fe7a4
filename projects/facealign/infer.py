"""`python -m projects.facealign.infer` — see projects/facealign/README.md."""

from shared.run import main

if __name__ == "__main__":
    main("facealign", "infer")
