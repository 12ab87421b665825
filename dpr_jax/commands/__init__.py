"""One module per ``dpr-jax`` subcommand: argument parsing and a call into the library."""
