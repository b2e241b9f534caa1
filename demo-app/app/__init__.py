"""A tiny calculator: the sample application pydeployer's demo pipeline delivers."""
