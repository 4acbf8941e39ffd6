"""Transport: topic catalogue, producer/consumer wrappers, headers, settings and faust wiring."""
