from asya_agents.cli import main

main()
