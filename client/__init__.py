"""The data owner / trainer: shares data and models, talks to the servers, reconstructs."""
