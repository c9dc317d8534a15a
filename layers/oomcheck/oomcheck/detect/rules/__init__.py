"""Rule families: pure functions of the run's Context that return an Outcome (signals,
resolutions, kills). Each declares the incident kinds it owns and whether it could judge."""
