"""Ray Tune / Optuna sweeps over attention classifiers (issue 4; the search-space part so far)."""
