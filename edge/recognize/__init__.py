"""One frame -> the cards in it: detect, rectify, embed, shortlist, verify, decide (the Recognizer)."""
