"""What several test files share: fake data, servers, CLI runs, photo folders, logged sweeps."""
