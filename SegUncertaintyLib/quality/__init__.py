"""Case-level quality without ground truth: features from the maps, predicted Dice, volume forecasts."""
