"""Benchmarks (``make bench``): each module measures one service against its peer in the same run."""
