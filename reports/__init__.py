"""Reports: statistics across seeds, tidy tables, seaborn figures, HTML/Markdown, leaderboard."""
