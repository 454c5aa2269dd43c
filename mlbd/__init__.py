"""mlbd: the course platform for Machine Learning with Big-Data."""
