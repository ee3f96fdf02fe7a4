"""`python -m projects.cajnn.eval` — see projects/cajnn/README.md."""

from shared.run import main

if __name__ == "__main__":
    main("cajnn", "eval")
