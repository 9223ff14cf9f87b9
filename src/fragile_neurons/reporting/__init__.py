"""For people: figures, how numbers are written, the offline plots page, the README's results
section and the sweep summaries over seeds."""
