"""References: requests to referees, their answers and the checks run on them."""
