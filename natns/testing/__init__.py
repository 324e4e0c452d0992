"""What tests need inside the package: hooks that make natns stop at an exact step."""
