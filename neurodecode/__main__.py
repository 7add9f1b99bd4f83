"""Allow ``python -m neurodecode`` (and ``accelerate launch -m neurodecode``)."""

from .cli import main

if __name__ == "__main__":
    main()
