"""The quality stage: the domain evaluator, features extracted once per image set, fidelity numbers
(FID, KID, IS, precision/recall) from them, CAS and memorization, and the `quality` config section."""
