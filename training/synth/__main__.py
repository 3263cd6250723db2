"""`python -m training.synth`: the synthetic world command line."""

from training.synth.cli import main

raise SystemExit(main())
