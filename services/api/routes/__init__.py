"""HTTP routes of the api; each body validates, calls one function, returns a model."""
