"""A traffic generator that knows the truth: real MNIST test images at a fixed rate, answers graded live."""
