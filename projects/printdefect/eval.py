"""`python -m projects.printdefect.eval` — see projects/printdefect/README.md."""

from shared.run import main

if __name__ == "__main__":
    main("printdefect", "eval")
