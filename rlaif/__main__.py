from rlaif.cli import main

main()
