"""Text banks the generators draw from: words and names, haystack prose, and the classed
question bank. All written for deeprlm, fixed, and the same on every machine."""
