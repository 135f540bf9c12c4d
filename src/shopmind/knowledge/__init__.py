"""Knowledge mining: encoders, text features, review mining, user profiles, item graph."""
