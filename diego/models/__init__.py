"""Models: attrs values, their JSON form, validation and the pure lifecycle rules."""
