"""The HTTP doors: auth, wire shapes and error rendering around the one core."""
