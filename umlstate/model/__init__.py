"""The desired state: the topology model, its loader and rules, its schema, and the snapshot type
observation fills. Pure but for the loader's one file read."""
