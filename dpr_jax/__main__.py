"""``python -m dpr_jax`` is the same as the ``dpr-jax`` command."""

from dpr_jax.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
