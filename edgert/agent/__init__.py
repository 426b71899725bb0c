"""The on-device agent: runs a package on an input source, measures it, publishes telemetry, and takes
commands (deploy a new package, roll back).  `store` keeps the packages on disk and swaps them
atomically; `sources` are the inputs the agent feeds the model from."""
