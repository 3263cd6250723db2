"""The `cardedge` command, one module per subcommand (`main` assembles them)."""
