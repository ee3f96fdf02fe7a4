"""Code that two or more of the workspace's projects use: ops, losses, metrics, I/O and the one driver."""
