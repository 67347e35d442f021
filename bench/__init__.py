"""augbench: does augmenting training data (classically or with generated images) make an image
classifier generalize better? See README.md and ARCHITECTURE.md."""
