"""The local OTP core: processes, GenServer, supervisors, registries and the node."""
