"""The versioned classifier suite (builders, recipes, versions) and the config entries that name
classifiers (suite names, or configured ones such as timm models)."""
