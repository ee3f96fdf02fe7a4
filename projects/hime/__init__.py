"""HIME: headshot image super-resolution with multiple exemplars (dissertation chapter 5)."""
