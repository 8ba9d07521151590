"""Model zoo: each family in one readable file."""
